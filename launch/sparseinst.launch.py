"""Start the SparseInst instance-segmentation node, optionally with a camera driver and rviz2.

    ros2 launch sparseinst_ros sparseinst.launch.py
    ros2 launch sparseinst_ros sparseinst.launch.py camera:=usb_cam rviz:=true
    ros2 launch sparseinst_ros sparseinst.launch.py image_topic:=/camera/image_raw \
        weights:=/models/sparseinst.pth device:=cuda
    ros2 launch sparseinst_ros sparseinst.launch.py image_topic:=/camera/camera/color/image_raw depth:=true \
        depth_topic:=/camera/camera/aligned_depth_to_color/image_raw \
        depth_info_topic:=/camera/camera/aligned_depth_to_color/camera_info

The launch arguments weights, device and depth override the values of params_file. With depth:=true the
node also reads depth_topic (registered to the image: RealSense's aligned_depth_to_color with
align_depth.enable:=true, or depth_image_proc/register) and depth_info_topic.
node_executable:=sparseinst_lifecycle_node starts the managed node instead: it waits, unconfigured, for
its lifecycle manager (or `ros2 lifecycle set /sparseinst_node configure`, then `activate`).

Every process started here gets the Fast DDS profile for large samples (config/fastdds_large_data.xml):
without it a best-effort subscription to camera-size images loses almost every frame. A camera
driver started elsewhere needs the same profile (docs/ros.md).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition, LaunchConfigurationEquals
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE_SHARE = FindPackageShare('sparseinst_ros')


def generate_launch_description():
    image_topic = LaunchConfiguration('image_topic')
    camera_info_topic = LaunchConfiguration('camera_info_topic')

    # Camera drivers publish image_raw and camera_info; both are moved to where the node reads them.
    camera_remappings = [
        ('image_raw', image_topic),
        ('image_raw/compressed', [image_topic, '/compressed']),
        ('camera_info', camera_info_topic),
    ]

    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([PACKAGE_SHARE, 'config', 'sparseinst.yaml']),
            description='YAML file with the parameters of sparseinst_node'),
        DeclareLaunchArgument(
            'image_topic', default_value='image',
            description='sensor_msgs/Image topic to segment (image_topic/compressed with compressed input)'),
        DeclareLaunchArgument(
            'camera_info_topic', default_value='camera_info',
            description='where the camera driver publishes camera_info: the sibling of image_topic, '
                        'which the node reads (/cam/image_raw -> /cam/camera_info)'),
        DeclareLaunchArgument(
            'weights', default_value='demo',
            description="checkpoint file (.pth or .safetensors), overrides params_file; 'demo': the shipped "
                        "demo model"),
        DeclareLaunchArgument(
            'device', default_value='auto', choices=['auto', 'cuda', 'cpu'],
            description='inference device, overrides params_file'),
        DeclareLaunchArgument(
            'depth', default_value='false', choices=['true', 'false'],
            description='also read depth_topic and depth_info_topic and publish 3D outputs, overrides params_file'),
        DeclareLaunchArgument(
            'depth_topic', default_value='depth/image',
            description='depth image registered to image_topic (16UC1 millimetres or 32FC1 metres)'),
        DeclareLaunchArgument(
            'depth_info_topic', default_value='depth/camera_info',
            description='camera_info of depth_topic'),
        DeclareLaunchArgument(
            'node_executable', default_value='sparseinst_node',
            choices=['sparseinst_node', 'sparseinst_lifecycle_node'],
            description='the plain node (starts at once) or the managed one (waits for configure/activate)'),
        DeclareLaunchArgument(
            'camera', default_value='none', choices=['none', 'usb_cam', 'v4l2_camera'],
            description='camera driver to start, publishing on image_topic'),
        DeclareLaunchArgument(
            'rviz', default_value='false', choices=['true', 'false'],
            description='start rviz2 showing the input image and the overlay'),
        DeclareLaunchArgument(
            'fastdds_profiles_file',
            default_value=PathJoinSubstitution([PACKAGE_SHARE, 'config', 'fastdds_large_data.xml']),
            description='Fast DDS XML profile for all processes started here (large-image transport)'),

        # Applies to every process started below.
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', LaunchConfiguration('fastdds_profiles_file')),

        Node(
            package='sparseinst_ros',
            executable=LaunchConfiguration('node_executable'),
            name='sparseinst_node',
            output='screen',
            emulate_tty=True,
            parameters=[
                LaunchConfiguration('params_file'),
                {'weights': LaunchConfiguration('weights'), 'device': LaunchConfiguration('device'),
                 'depth': LaunchConfiguration('depth')},
            ],
            # The node reads image_topic/compressed with compressed input (image_transport's naming), and
            # the camera_info beside image_topic (/cam/image_raw -> /cam/camera_info).
            remappings=[('image', image_topic), ('depth/image', LaunchConfiguration('depth_topic')),
                        ('depth/camera_info', LaunchConfiguration('depth_info_topic'))],
        ),
        Node(
            package='usb_cam',
            executable='usb_cam_node_exe',
            name='usb_cam',
            output='screen',
            remappings=camera_remappings,
            condition=LaunchConfigurationEquals('camera', 'usb_cam'),
        ),
        Node(
            package='v4l2_camera',
            executable='v4l2_camera_node',
            name='v4l2_camera',
            output='screen',
            remappings=camera_remappings,
            condition=LaunchConfigurationEquals('camera', 'v4l2_camera'),
        ),
        Node(
            package='rviz2',
            executable='rviz2',
            name='rviz2',
            arguments=['-d', PathJoinSubstitution([PACKAGE_SHARE, 'config', 'sparseinst.rviz'])],
            # The rviz config shows /image; follow image_topic.
            remappings=[('/image', image_topic)],
            condition=IfCondition(LaunchConfiguration('rviz')),
        ),
    ])
